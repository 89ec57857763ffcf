"""The online half of the loop: click models, traffic simulation, the event drain, online
metrics, experiment analysis, click-derived labels and the weekly report."""
