//! What people look at, as opposed to what clients pull: repositories found
//! by a piece of their name, and images described for reading (platforms,
//! sizes, layers, config, referrers). Used by `docker search` and the web
//! page; knows nothing of HTTP or HTML.

pub mod image;
pub mod search;

pub use image::{ImageView, Kind, Summaries, Summary};
pub use search::{search, Found};
