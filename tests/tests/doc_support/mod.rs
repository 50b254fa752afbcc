//! The doc runner's parts: finding marked commands in Markdown (`markdown`), the throwaway
//! environment they run in (`environment`), and running them in order (`runner`).

pub mod environment;
pub mod markdown;
pub mod runner;
