"""aiortc tracks <-> engine frames; data channel <-> control messages. Knows no stage."""
