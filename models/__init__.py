"""Models: CTR backbones (layers/ + ctr/), language-model loading and prompt fusion, the trainer."""
