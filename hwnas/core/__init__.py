"""The model core: architectures as frozen, hashed records (`arch`), the search spaces that define
them (`spaces`), the timm-based builder and the cell spaces' own networks that make them networks
(`build`, `cells` for NB201, `darts` for DARTS, `ops`), a cell space's edges for supernets (`edges`),
and what is built on those: presets, models, weights, the reference network."""
