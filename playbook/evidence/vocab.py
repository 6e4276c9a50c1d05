"""The shared words, re-exported from their one home, playbook.vocabulary.categories."""

from __future__ import annotations

from playbook.vocabulary.categories import (
    CATEGORIES,
    ID_PREFIX,
    NOTEBOOK_FILES,
    NOTEBOOK_OF_CATEGORY,
    OWN_APPLICATION_NAME,
    SEVERITIES,
    STACKS,
    UNKNOWN_STACK,
    Category,
    NotebookName,
    SeverityName,
    Stack,
)

__all__ = [
    "CATEGORIES",
    "ID_PREFIX",
    "NOTEBOOK_FILES",
    "NOTEBOOK_OF_CATEGORY",
    "OWN_APPLICATION_NAME",
    "SEVERITIES",
    "STACKS",
    "UNKNOWN_STACK",
    "Category",
    "NotebookName",
    "SeverityName",
    "Stack",
]
