//! In-process reference backend of pvabi, with a virtual clock, fault injection and a call trace
