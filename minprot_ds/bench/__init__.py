"""The distillation's benchmarks, behind `minprot bench` and benchmarks/*.py: throughput per setting and the
naive loop it is compared with (`throughput`, `naive`, `report`), the memory plan and its measurement (`memory`,
`memory_measure`), where a step's time goes (`profile`) and what the data pipeline delivers (`data_pipeline`).
The FLOP model and MFU they report are `minprot_ds.distill.flops`."""
