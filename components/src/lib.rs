//! kwpipe's components: the data model, acknowledgements, wire formats, and every
//! source, transform and sink, with one explicit registry of them.

pub mod ack;
pub mod allocator;
pub mod api;
pub mod durations;
pub mod event;
pub mod formats;
pub mod headers;
pub mod kafka;
pub mod kwdb;
mod option_names;
pub mod registry;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod template;
pub mod transforms;

pub use ack::{BatchNotifier, BatchStatusReceiver, EventFinalizers, EventStatus};
pub use api::{
    BuildContext, Component, ComponentClass, ComponentConfig, ComponentContext, ComponentError,
    GlobalOptions, OutputDef,
};
pub use event::{
    DataType, Event, EventKind, Field, Metadata, Precision, RawMessage, Row, RowBatch, TableKind,
    TableSchema, Target, Timestamp, Value,
};
