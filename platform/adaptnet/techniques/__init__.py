"""Training techniques as composable "tasks": each returns a dict of named losses (summed by the loop)."""
from .tasks import MultiExitCE, Task, TaskOutput, exit_weight_vector

__all__ = ["MultiExitCE", "Task", "TaskOutput", "exit_weight_vector"]
