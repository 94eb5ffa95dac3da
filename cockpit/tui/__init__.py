"""The Textual app. Reads models produced by the node, job, sweep and analysis layers; never shells out itself."""
