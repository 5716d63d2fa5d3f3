"""TensorBoard plugin for keras-pbt: the **PBT lineage** tab.

Registered through the `tensorboard_plugins` entry point of the `keras-pbt`
distribution; `tensorboard --logdir runs` shows the tab for any logdir that
holds `pbt_lineage` summaries.
"""
