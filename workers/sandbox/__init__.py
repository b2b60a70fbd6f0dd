"""The code sandbox: runs model-written code isolated, and judges it against tests from outside."""
from workers.sandbox.config import SandboxConfig
from workers.sandbox.isolation import WHAT_IS_ISOLATED, SandboxWarning
from workers.sandbox.sandbox import STATUSES, CodeJob, Sandbox, Verdict

__all__ = ["STATUSES", "WHAT_IS_ISOLATED", "CodeJob", "Sandbox", "SandboxConfig", "SandboxWarning", "Verdict"]
