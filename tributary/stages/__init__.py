"""The stages of an epoch, each a plain function of the home and the previous stage's value.

`tributary.epoch` runs them in order; the Dagster assets call them one per asset.
"""
