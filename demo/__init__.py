"""``prefixscope demo``: the whole story end to end on an embedded store (not the kernel).

``tinymodels`` builds the small offline Llama and its real PEFT adapters; ``data`` the
departments' notes and golden datasets; ``traffic`` the simulated production traffic;
``report`` what the demo prints; ``models`` the trained models; ``app`` the run (the
command is ``prefixscope.cli.demo``).
"""
