//! The billing pipeline, stage by stage (issue: one pipeline for every
//! report): selecting the meters comes first ([`meters`]).

pub mod meters;
