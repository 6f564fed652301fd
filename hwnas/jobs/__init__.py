"""The jobs commands run that join several layers: an export checked against its latency table
(`export`), and resumable calibration and validation of a table (`calibrate`). Beside search,
transfer and scale-out in the pipeline layer; commands parse their flags and print their results."""
