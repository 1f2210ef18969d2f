"""Higher timeframes (M5 … D1) built from the M1 lake: a pure core that decides and buckets,
an edge (``build``) that reads M1 parts and writes aggregate parts through the lake store."""
