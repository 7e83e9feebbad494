//! How a stage tells the person or the CI log how its items (images, objects) are going while
//! it works. Stages only see this trait; `report::progress` draws it.

/// Live news of work on named items. Called from many tasks at once.
pub trait Progress: Send + Sync {
    /// The item's latest news.
    fn update(&self, item: &str, message: &str);
    /// The item is done; `message` is what stays.
    fn finish(&self, item: &str, message: &str);
}

/// Says nothing: for callers that only want the stage's result.
pub struct Silent;

impl Progress for Silent {
    fn update(&self, _: &str, _: &str) {}
    fn finish(&self, _: &str, _: &str) {}
}
