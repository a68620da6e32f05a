"""The training stack: data, models, optimizers (digital and TNGD on a Device), the loop, runs."""
