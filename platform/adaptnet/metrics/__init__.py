from .costs import ExitCost, exit_costs

__all__ = ["ExitCost", "exit_costs"]
