//! Kafka's rules for topic names, as pure functions: the controller decides
//! CreateTopics by them, and the broker checks names with the same ones.

/// Kafka's limit on topic name length (`Topic.MAX_NAME_LENGTH`).
pub const TOPIC_NAME_CHARS_MAX: usize = 249;

/// Checks a topic name the way Kafka does; the error text goes back to the client.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > TOPIC_NAME_CHARS_MAX {
        return Err(format!(
            "topic name is {} characters; the limit is {TOPIC_NAME_CHARS_MAX}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name '{name}' contains '{bad}'; only ASCII letters, digits, '.', '_' and '-' are legal"
        ));
    }
    Ok(())
}

/// Kafka treats '.' and '_' as the same character when checking collisions,
/// because both map to '_' in metric names.
pub fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name(".").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name("ünïcode").is_err());
        assert!(validate_topic_name(&"x".repeat(TOPIC_NAME_CHARS_MAX)).is_ok());
        assert!(validate_topic_name(&"x".repeat(TOPIC_NAME_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn dot_and_underscore_collide() {
        assert_eq!(collision_key("a.b_c"), collision_key("a_b.c"));
        assert_ne!(collision_key("a-b"), collision_key("a_b"));
    }
}
