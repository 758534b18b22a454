//! The social-graph service binary: serves until SIGTERM.

social_events::service_main!(social_kit::peers::GRAPH, social_graph);
