"""Efficiency benchmarks of OpenMMLab models (docs/benchmark.md): params, MACs/FLOPs, latency,
throughput, training speed, peak memory, Pareto fronts and end-to-end detection latency."""
from .flops import count_ops
from .pareto import analyse, correlations, format_analysis, load_accuracy, pareto_front
from .report import flat_row, format_table, save_results
from .runner import METRICS, benchmark_config, check_backend
from .subject import Subject

__all__ = [
    'count_ops', 'analyse', 'correlations', 'format_analysis', 'load_accuracy', 'pareto_front', 'flat_row',
    'format_table', 'save_results', 'METRICS', 'benchmark_config', 'check_backend', 'Subject'
]
