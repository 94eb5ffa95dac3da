"""The Textual app. Reads models produced by the node, job and experiment layers; never shells out itself."""
