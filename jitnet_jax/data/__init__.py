"""Where frames and labels come from: stream types, label stores, video decode, the synthetic stream."""
