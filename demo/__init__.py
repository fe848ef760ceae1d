"""``prefixscope demo``: the whole story end to end on an embedded store (not the kernel).

``tinymodels`` builds the small offline Llama and its real PEFT adapters; ``data`` the
departments' notes and golden datasets; ``traffic`` the simulated production traffic;
``report`` what the demo prints; ``app`` the command.
"""

from .app import demo_command

__all__ = ["demo_command"]
