"""Judging what training made: `soundvj eval` (`evaluate`) and the sample grids and videos the stages
write while they train (`samples`)."""
