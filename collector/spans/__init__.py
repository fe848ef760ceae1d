"""What a span is, below every other room of the collector: the columnar span model
(``model``), foreign attribute spellings mapped to its columns (``normalize``), the model's
input and answer as text (``messages``), and the request rule that turns spans into the
requests every metric counts (``requests``). Imports nothing else of the collector."""
