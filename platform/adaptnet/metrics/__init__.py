from .costs import ExitCost, exit_costs
from .accuracy import topk_correct

__all__ = ["ExitCost", "exit_costs", "topk_correct"]
