"""What a prompt version sends beyond its template: conversation turns, images, tools."""
