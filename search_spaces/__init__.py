"""What can be searched: operators, upsamplers, the multi-resolution supernet, architectures, teachers."""
