"""A prompt version + inputs → what is sent (messages, response_format); a reply → parsed fields."""
