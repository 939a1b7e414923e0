"""The smallest model configuration the tests train: fast, yet every network is present."""

TINY = dict(
    glimpses=2,
    hidden=32,
    crop=16,
    proxy=16,
    crop_width=8,
    crop_features=16,
    proxy_width=8,
    proxy_features=16,
    z_features=8,
)
