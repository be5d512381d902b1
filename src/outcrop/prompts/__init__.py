"""Prompt engineering: the anatomy of a prompt, files, versions and labels, lint, chains."""

from .chain import Chain, ChainResult, Step
from .files import PromptFile, load_file, project_prompts, prompts_dir
from .prompt import Example, OutputFormat, Prompt, Variable
from .versions import PromptRegistry, PromptVersion, parse_ref

__all__ = [
    "Chain",
    "ChainResult",
    "Example",
    "OutputFormat",
    "Prompt",
    "PromptFile",
    "PromptRegistry",
    "PromptVersion",
    "Step",
    "Variable",
    "load_file",
    "parse_ref",
    "project_prompts",
    "prompts_dir",
]
