"""Energy meters: one module per source, all behind the `EnergyMeter` protocol."""
