"""What viewers see: the landing page, the embeddable player, their static assets."""
