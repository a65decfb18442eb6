# Copyright (c) dsnet_mm contributors. All rights reserved.
"""MAdds per sub-network, and later latency benchmarks and plots."""
from dsnet_mm.models.complexity import count_complexity
from .report import markdown_table, write_report
from dsnet_mm.models.subnet_table import subnet_complexity

__all__ = [
    'count_complexity', 'subnet_complexity', 'markdown_table', 'write_report'
]
