//! Gallery of enrolled people: SQLite storage plus an in-memory embedding index.
//! (Being written; see issue 2.)
