"""dermstack.extract"""
