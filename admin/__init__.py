"""Operations: the retention scheduler (expiry sweep) and operator actions; the admin tab comes later."""
