"""Export only: every Prometheus metric, fed by the records the serving and energy layers emit."""
