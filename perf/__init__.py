"""perf: throughput benchmarks of DCP storage backends, their baselines, and the report tool."""
