"""Knowledge bases (RAG): load documents, chunk, index, retrieve, answer with citations."""

from .chunking import Chunk, ChunkingSettings, chunk_text
from .kb import AddReport, Answer, Citation, KnowledgeBase, SearchResult, kb_names
from .loaders import LoadedDocument, LoadError, LoadOptions, LoadProblem, load_file, load_path
from .rerank import LLMReranker

__all__ = [
    "AddReport",
    "Answer",
    "Chunk",
    "ChunkingSettings",
    "Citation",
    "KnowledgeBase",
    "LLMReranker",
    "LoadError",
    "LoadOptions",
    "LoadProblem",
    "LoadedDocument",
    "SearchResult",
    "chunk_text",
    "kb_names",
    "load_file",
    "load_path",
]
