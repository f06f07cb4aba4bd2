pub mod histories;
pub mod signatures;
