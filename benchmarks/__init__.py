"""Side-by-side benchmarks of densemed against reference implementations (MONAI, TorchIO)."""
