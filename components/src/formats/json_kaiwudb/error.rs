//! What can be wrong with a `json_kaiwudb` object or row.

use crate::event::DataType;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonKaiwudbError {
    #[error("invalid JSON: {0}")]
    Syntax(String),
    #[error("missing \"{0}\"")]
    Missing(&'static str),
    #[error("unknown type \"{0}\"")]
    UnknownType(String),
    #[error("\"{0}\" is declared twice")]
    DuplicateName(String),
    #[error("a time-series table's first column must be a timestamp, not {0}")]
    FirstColumnNotTimestamp(DataType),
    #[error("a time-series table needs a primary tag")]
    NoPrimaryTag,
    #[error("not a field of the table")]
    UnknownField,
    #[error("given twice in the row")]
    DuplicateValue,
    #[error("a data row must be an object, found {0}")]
    RowNotObject(&'static str),
    #[error("more than 4096 columns or 128 tags for one table")]
    TooMany,
}
