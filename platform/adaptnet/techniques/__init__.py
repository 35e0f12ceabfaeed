"""Training techniques as composable "tasks": each returns a dict of named losses (summed by the loop)."""
from .adn import DepthKD, SingleDepthCE, SuperBaseDistillation, top_k_kd_loss
from .imta import IMTANet, ISCHeads, kd_loss
from .tasks import MultiExitCE, OneForAllKD, Task, TaskOutput, exit_weight_vector

__all__ = ["DepthKD", "SingleDepthCE", "SuperBaseDistillation", "top_k_kd_loss", "IMTANet", "ISCHeads", "kd_loss", "MultiExitCE", "OneForAllKD", "Task", "TaskOutput", "exit_weight_vector"]
