//! The wire protocol: line framing (`codec`), typed commands (`command`), the pure
//! parser (`parse`) and response rendering (`response`). No actix here.

pub mod codec;
pub mod command;
pub mod parse;
pub mod response;

pub use codec::{Line, LineCodec};
pub use command::Command;
pub use parse::{parse_line, ParseError};
pub use response::{expected_shape, BlockHead, Response, Shape};
