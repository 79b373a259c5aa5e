"""Synthetic stand-ins for the models the workflows use, generated from seeds (nothing downloaded):
a tiny SDXL-architecture checkpoint (tiny_sdxl), PhotoMaker files in the released layouts
(pm_weights) and a fake InsightFace pack with synthetic faces (fake_insightface). Used by
`scripts/demo.py --synthetic` and by the tests; development tooling, never imported by the pack."""
