"""Throughput benchmarking: the FLOP model and MFU (`flops`), and the benchmarks built on the engine."""
