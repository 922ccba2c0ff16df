//! Integration tests of `wombat-workspace` (one binary, several modules).

mod corpus;
mod examples;
mod rules;
mod skills;
mod support;
