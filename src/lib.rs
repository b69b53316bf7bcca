//! tidemark
