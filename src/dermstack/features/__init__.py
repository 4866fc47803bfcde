"""dermstack.features"""
