"""The network alone: JITNet, its conv with a CPU-friendly backward, linear-cost bilinear resize."""
