"""The model core: architectures as frozen, hashed records (`arch`), the search spaces that define
them (`spaces`), the timm-based builder and NB201's cells that make them networks (`build`,
`cells`, `ops`), and what is built on those: presets, models, weights, the reference network."""
