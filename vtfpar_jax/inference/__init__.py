"""Running a model on footage: clips and videos read, predictions, and attributes per
person in a street video (detection, tracking, tracklets, drawings)."""
